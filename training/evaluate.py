"""`ovseg evaluate` (ovseg_core.evaluation.runner) as a script, the form torchrun launches; --help for the options."""
from ovseg_core.evaluation.runner import main

raise SystemExit(main())
