"""``python -m aigrobust`` runs the CLI."""

from aigrobust.cli import main

if __name__ == "__main__":
    main()
