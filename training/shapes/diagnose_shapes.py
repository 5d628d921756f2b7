"""ShapesWorld classifier diagnosis (ovseg_core.shapes.diagnose) as a script, its documented command; --help for the options."""
from ovseg_core.shapes.diagnose import main

raise SystemExit(main())
