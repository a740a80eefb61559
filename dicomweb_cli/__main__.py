"""`python -m dicomweb_cli ...` runs the `dicomweb` command."""

from dicomweb_cli.cli import main

raise SystemExit(main())
