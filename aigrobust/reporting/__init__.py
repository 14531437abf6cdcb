"""Reports: tables, figures and pages aggregated from records."""
