"""numconv's command line: one thin file per command; the only package that imports click/rich."""
