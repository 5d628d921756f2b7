"""`ovseg train` (ovseg_core.training.cli) as a script, the form torchrun launches; --help for the options."""
from ovseg_core.training.cli import main

raise SystemExit(main())
