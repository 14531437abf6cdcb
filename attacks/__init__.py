"""Attacks on [0, 1] images: ``attack(model, inputs, labels, epsilons=[...]) -> AttackResult``.

``get_attack("pgd", steps=40)``, ``get_attack("foolbox:LinfDeepFoolAttack")``, or a spec string
``attack_from_spec("pgd:steps=40,restarts=2")``. This package depends on torch (and foolbox for the bridge) only.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aigrobust.errors import AigrobustError
from aigrobust.registry import Registry
from aigrobust.specs import Rule, finite_number, format_value, parse_value, positive_int, require, spec_name
from aigrobust.specs import split_spec as split_parts
from attacks.apgd import APGD, APGDTargeted, apgd_checkpoints, dlr_loss
from attacks.base import Attack, AttackResult, validate_epsilons
from attacks.compute_attack import LOSSES as COMPUTE_LOSSES
from attacks.compute_attack import ComputeInflation, RandomNoise
from attacks.distances import DISTANCES, Distance, L2Distance, LinfDistance
from attacks.fab import FABTargeted
from attacks.gate_attacks import GateFlip
from attacks.gradient import BIM, FGSM, MIFGSM, PGD
from attacks.settings import SETTING_RULES, rule_from_default
from attacks.square import SquareAttack

# AutoAttack's protocols as attack lists, each run as a per-sample worst case with early exit: an attack works only
# on the samples the ones before it left standing
SUITES: dict[str, tuple[str, ...]] = {
    "standard": ("apgd:steps=100", "apgd-t:steps=100,n_target_classes=9", "fab-t:steps=100,n_target_classes=9",
                 "square:n_queries=5000"),
    "rand": ("apgd:steps=100,eot_draws=20", "apgd-dlr:steps=100,eot_draws=20"),
    "quick": ("fgsm", "pgd:steps=20"),
}


class UnknownAttackError(AigrobustError, KeyError):
    """An attack name that is not registered; the message suggests the closest."""

    def __str__(self) -> str:
        return str(self.args[0])


def list_attacks() -> list[str]:
    """Native attack names (any foolbox attack is reachable as 'foolbox:ClassName').

    Returns:
        The registered names, sorted.

    >>> "apgd-t" in list_attacks()
    True
    """
    return sorted(_ATTACKS)


class AttackSpecError(AigrobustError, ValueError):
    """A setting of an attack that is unknown, of the wrong type or out of range; the message is one line."""


OBJECTIVES = ("accuracy", "gates", "compute")  # what an attack is after: the label, the gate pattern, the FLOPs
METHODS = ("single-step", "iterative", "black-box", "random")  # how it searches


@dataclass(frozen=True)
class AttackRole:
    """What an attack is, as every part that groups attacks reads it (sanity checks, metrics, reports): its
    objective, how it searches, and whether it is a control (noise of the same norm beside a real attack)."""

    objective: str = "accuracy"
    method: str = "iterative"
    control: bool = False

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES or self.method not in METHODS:
            raise ValueError(f"an attack's objective is one of {', '.join(OBJECTIVES)} and its method one of "
                             f"{', '.join(METHODS)}; got {self.objective!r}, {self.method!r}")


@dataclass(frozen=True)
class AttackEntry:
    """One registered attack: its class, the settings its name fixes, its short label for tables, rules for
    settings of its own (beside the shared ones in ``SETTING_RULES``) and its role."""

    cls: type[Attack]
    fixed: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None
    rules: Mapping[str, Rule] = field(default_factory=dict)
    role: AttackRole = field(default_factory=AttackRole)

    def build(self, **kwargs: Any) -> Attack:
        """The attack with ``kwargs`` and the settings this name fixes."""
        return self.cls(**{**kwargs, **self.fixed})


_ATTACKS: Registry[AttackEntry] = Registry("attack")


def register_attack(name: str, cls: type[Attack], *, fixed: Mapping[str, Any] | None = None, label: str | None = None,
                    rules: Mapping[str, Rule] | None = None,
                    role: AttackRole | None = None) -> None:
    """Add an attack under ``name``: the one place the parser, canonical specs, labels, ``aigrobust attacks``, the
    help texts and everything that groups attacks by what they are (:func:`attack_role`) read.

    Args:
        name: the name in specs (``name:key=value,...``); new, lower case.
        cls: the :class:`~attacks.base.Attack` subclass; its constructor's keywords are the settings.
        fixed: settings that are part of the name ('pgd-l2' fixes distance='l2').
        label: the short label of tables and legends (default: the name in capitals).
        rules: checks of settings the shared rules do not know (``{key: (check, wording)}``).
        role: its objective, method and whether it is a control (default: an iterative accuracy attack).

    >>> from attacks.gradient import BIM
    >>> class QuietBIM(BIM):
    ...     name = "quiet-bim"
    >>> register_attack("quiet-bim", QuietBIM, label="Quiet BIM")  # doctest: +SKIP
    >>> attack_role("apgd-t").objective, attack_role("random-noise").control  # what a registration says
    ('accuracy', True)
    """
    _ATTACKS.add(name, AttackEntry(cls, dict(fixed or {}), label, dict(rules or {}), role or AttackRole()))


def unregister_attack(name: str) -> None:
    """Remove a registered attack (a plug-in's or a test's own); unknown names raise :class:`UnknownAttackError`."""
    if name not in _ATTACKS:
        raise UnknownAttackError(f"unknown attack {name!r}")
    del _ATTACKS[name]


def attack_role(spec: str) -> AttackRole | None:
    """What the attack a spec names is (objective, method, control), from its registration; foolbox attacks are
    iterative accuracy attacks; None for a name no longer registered (old records)."""
    name = spec_name(str(spec))
    if name.startswith("foolbox:"):
        return AttackRole()
    entry = _ATTACKS.get(name)
    return entry.role if entry is not None else None


def attack_objective(spec: object) -> str:
    """What the attack a spec names is after ('accuracy', 'gates', 'compute'); '' for a name no longer registered."""
    role = attack_role(str(spec))
    return role.objective if role is not None else ""


def is_compute_attack(spec: object, controls: bool = False) -> bool:
    """Whether a spec names a compute attack; its noise control counts only with ``controls``."""
    role = attack_role(str(spec))
    return role is not None and role.objective == "compute" and (controls or not role.control)


register_attack("fgsm", FGSM, label="FGSM", role=AttackRole(method="single-step"))
register_attack("fgm-l2", FGSM, fixed={"distance": "l2"}, label="FGM-L2", role=AttackRole(method="single-step"))
register_attack("bim", BIM, label="BIM")
register_attack("pgd", PGD, label="PGD")
register_attack("pgd-l2", PGD, fixed={"distance": "l2"}, label="PGD-L2")
register_attack("mifgsm", MIFGSM, label="MI-FGSM")
register_attack("apgd", APGD, fixed={"loss": "ce"}, label="APGD-CE")
register_attack("apgd-l2", APGD, fixed={"distance": "l2", "loss": "ce"}, label="APGD-CE-L2")
register_attack("apgd-dlr", APGD, fixed={"loss": "dlr"}, label="APGD-DLR")
register_attack("apgd-t", APGDTargeted, label="APGD-T")
register_attack("fab-t", FABTargeted, label="FAB-T")
register_attack("square", SquareAttack, label="Square", role=AttackRole(method="black-box"))
_COMPUTE_RULES = {
    "gate_loss": (lambda v: v in COMPUTE_LOSSES, f"{', '.join(COMPUTE_LOSSES[:-1])} or {COMPUTE_LOSSES[-1]}"),
    "kappa": (lambda v: finite_number(v) and v > 0, "a number > 0"),
    "p": (lambda v: finite_number(v) and v >= 1, "a number >= 1"),
    "normalize": (lambda v: isinstance(v, bool), "true or false"),
    "deconflict": (lambda v: isinstance(v, bool), "true or false"),
    "schedule": (lambda v: v in ("adam", "apgd", "fixed"), "adam, apgd or fixed"),
}
_COMPUTE = AttackRole(objective="compute")
register_attack("compute-inflation", ComputeInflation, rules=_COMPUTE_RULES, role=_COMPUTE)
register_attack("compute-inflation-l2", ComputeInflation, fixed={"distance": "l2"}, rules=_COMPUTE_RULES, role=_COMPUTE)
register_attack("compute-inflation-keep-label", ComputeInflation, fixed={"keep_label": True}, rules=_COMPUTE_RULES,
                role=_COMPUTE)
register_attack("gate-flip", GateFlip, role=AttackRole(objective="gates"))
register_attack("random-noise", RandomNoise, rules={"draws": (lambda v: positive_int(v), "a positive integer")},
                role=AttackRole(objective="compute", method="random", control=True))


def check_settings(name: str, constructor: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """Every setting known to ``constructor``, of the right type and in range (the attack's own rules first, then
    the shared ones); else one line naming it."""
    params = inspect.signature(constructor).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    known = [k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD and k != "self"]
    for key, value in kwargs.items():
        if key not in params and not takes_any:
            raise AttackSpecError(f"attack {name!r} has no setting {key!r}; it takes {', '.join(known) or 'none'}")
        own = _ATTACKS[name].rules if name in _ATTACKS else {}
        rule = (own.get(key) or SETTING_RULES.get(key)
                or (rule_from_default(params[key].default) if key in params else None))
        if rule is not None:
            require(f"attack {name!r}", key, value, rule, AttackSpecError)


def get_attack(name: str, **kwargs: Any) -> Attack:
    """An attack by name with its settings (each checked for type and range before the attack is built).

    Args:
        name: a registered name (:func:`list_attacks`) or ``"foolbox:ClassName"``.
        **kwargs: the attack's settings (``steps=40``, ``distance="l2"``, ``seed=1``); unknown ones are refused.

    Returns:
        The attack: call it as ``attack(model, inputs, labels, epsilons)``.

    >>> get_attack("pgd", steps=40).spec
    'pgd:steps=40,rel_stepsize=auto,abs_stepsize=auto,restarts=1,distance=linf,stop_at_success=true'
    """
    if name.startswith("foolbox:"):
        import foolbox

        from attacks.foolbox_bridge import FoolboxAttack

        cls = getattr(foolbox.attacks, name.split(":", 1)[1], None)
        if cls is None or not isinstance(cls, type):
            raise UnknownAttackError(f"foolbox has no attack {name.split(':', 1)[1]!r}")
        check_settings(name, cls.__init__, {k: v for k, v in kwargs.items() if k != "seed"})
        try:
            attack: Attack = FoolboxAttack(name.split(":", 1)[1], **kwargs)
        except (TypeError, ValueError) as err:
            raise AttackSpecError(f"bad settings for attack {name!r}: {err}") from None
        attack.spec = canonical_spec(name, kwargs)
        return attack
    if name not in _ATTACKS:
        close = _ATTACKS.close_names(name)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(list_attacks())}, foolbox:NAME"
        raise UnknownAttackError(f"unknown attack {name!r}{hint}")
    fixed = set(_ATTACKS[name].fixed) & set(kwargs)
    if fixed:
        raise AttackSpecError(f"attack {name!r} fixes {', '.join(sorted(fixed))}; use its base attack to choose it")
    check_settings(name, _constructor(name), kwargs)
    try:
        attack = _ATTACKS[name].build(**kwargs)
    except TypeError as err:
        raise AttackSpecError(f"bad settings for attack {name!r}: {err}") from None
    attack.spec = canonical_spec(name, kwargs)
    return attack


def attack_settings(name: str) -> dict[str, Any]:
    """The settings a registered attack takes and their defaults (those its registered name fixes left out)."""
    fixed = set(_ATTACKS[name].fixed)
    params = inspect.signature(_constructor(name)).parameters
    return {k: p.default for k, p in params.items()
            if k not in ("self", "seed", *fixed) and p.kind is not inspect.Parameter.VAR_KEYWORD}


def _settings_of(name: str) -> dict[str, Any]:
    """Every setting of a native or foolbox attack with its default (None where the attack chooses: 'auto')."""
    if name.startswith("foolbox:"):
        import foolbox

        params = inspect.signature(getattr(foolbox.attacks, name.split(":", 1)[1]).__init__).parameters
        return {k: (None if p.default is inspect.Parameter.empty else p.default) for k, p in params.items()
                if k != "self" and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)}
    return attack_settings(name)


def canonical_spec(name: str, settings: dict[str, Any]) -> str:
    """The attack's identity: its name and every setting, defaults filled in, in the constructor's order
    ('pgd:steps=10,rel_stepsize=auto,...'). Two attacks with the same canonical spec run the same algorithm."""
    values = {**_settings_of(name), **{k: v for k, v in settings.items() if k != "seed"}}
    return name + (":" + ",".join(f"{k}={format_value(v)}" for k, v in values.items()) if values else "")


# short display names come from each registration; the budget (steps or queries) follows them
_BUDGET_KEYS = ("steps", "n_queries")


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """'name:key=value,...' -> (name, {key: value text}); foolbox names keep their 'foolbox:' prefix."""
    parts = split_parts(spec, "attack", AttackSpecError)
    return parts.name, parts.settings


def attack_kind(spec: str) -> str:
    """The attack's short name ('pgd', 'apgd', 'square') from any spec; a name that no longer parses (old
    records) passes unchanged."""
    try:
        return attack_from_spec(spec).name
    except (AttackSpecError, UnknownAttackError):
        return spec


NORM_NAMES = {"linf": "Linf", "l2": "L2"}  # how tables and messages name each norm


def attack_norm(spec: str) -> str:
    """The norm an attack's epsilon bounds ('linf' or 'l2'), from the attack itself: a name such as 'apgd-l2'
    fixes it without a 'distance' setting. A spec that no longer parses (old records) reads as 'linf'."""
    try:
        return attack_from_spec(spec).distance.name
    except (AttackSpecError, UnknownAttackError):
        return "linf"


def attack_label(spec: str) -> str:
    """A short name for tables and legends: 'PGD-20', 'APGD-CE-50', 'Square-5000', with any setting that differs
    from its default after it ('PGD-10 (rel_stepsize=0.1)'). Specs without settings (old records) pass through."""
    try:
        name, settings = split_spec(spec)
    except AttackSpecError:  # a text that never was a spec
        return spec
    if not settings or (name not in _ATTACKS and not name.startswith("foolbox:")):
        return spec
    label = (_ATTACKS[name].label if name in _ATTACKS else None) or name
    budget = [settings[k] for k in _BUDGET_KEYS if k in settings]
    if budget:
        label += "-" + budget[0]
    try:
        defaults = {k: format_value(v) for k, v in _settings_of(name).items()}
    except AttributeError:  # a foolbox class that this foolbox lacks
        defaults = {}
    changed = [f"{k}={v}" for k, v in settings.items() if k not in _BUDGET_KEYS and defaults.get(k) != v]
    return label + (f" ({', '.join(changed)})" if changed else "")


def attack_catalogue() -> list[str]:
    """One line per registered attack with its settings and their defaults (what ``aigrobust attacks`` prints)."""
    lines = []
    for name in list_attacks():
        defaults = attack_settings(name)
        settings = ", ".join(f"{k}={format_value(v)}" for k, v in defaults.items())
        # the ball its epsilons bound: one run takes one norm, so say it beside each attack
        norm = "Linf or L2" if "distance" in defaults else NORM_NAMES[attack_norm(name)]
        lines.append(f"{name:<30} {norm:<10} {settings or '(no settings)'}")
    lines += [f"--suite {name:<22} {' + '.join(specs)} (early exit)" for name, specs in SUITES.items()]
    return lines + ["auto: PGD and the gate attacks step 2.5 eps / steps",
                    "foolbox:NAME[:key=value,...]    any attack class of foolbox.attacks, with its own settings"]


def _constructor(name: str) -> Callable[..., Any]:
    """The constructor behind a registered name (whose registration may fix some of its settings)."""
    return _ATTACKS[name].cls.__init__


def attack_from_spec(spec: str, defaults: Mapping[str, Any] | None = None) -> Attack:
    """'name' or 'name:key=value,key=value' (foolbox: 'foolbox:Class:key=value'); 'auto' leaves a setting to the
    attack (so every canonical spec parses back to the same attack).

    Args:
        spec: the text, as the command line's ``--attack`` takes it.
        defaults: settings the text's own override (older records' defaults: ``aigrobust.runs.migrate``).

    Returns:
        The attack, its canonical spec (every setting filled in) in ``.spec``.

    >>> attack_from_spec("fgsm").spec
    'fgsm:distance=linf'
    """
    parts = split_parts(spec, "attack", AttackSpecError)
    kwargs: dict[str, Any] = dict(defaults or {})
    for key, text in parts.settings.items():
        value = parse_value(text)
        if value is None:  # 'auto': the attack's own choice, whatever the defaults say
            kwargs.pop(key, None)
        else:
            kwargs[key] = value
    return get_attack(parts.name, **kwargs)


__all__ = [
    "APGD", "APGDTargeted", "BIM", "FABTargeted", "dlr_loss", "DISTANCES", "FGSM", "MIFGSM", "PGD", "Attack", "AttackResult", "AttackSpecError", "ComputeInflation",
    "AttackEntry", "AttackRole", "Distance", "SUITES", "register_attack", "unregister_attack", "attack_role", "attack_objective", "is_compute_attack", "attack_catalogue", "attack_kind", "attack_label", "attack_norm", "NORM_NAMES", "attack_settings", "canonical_spec", "check_settings", "split_spec",
    "GateFlip", "L2Distance", "RandomNoise", "LinfDistance", "SquareAttack", "UnknownAttackError", "apgd_checkpoints",
    "attack_from_spec", "get_attack", "list_attacks", "validate_epsilons",
]
