"""ShapesWorld evaluation (ovseg_core.shapes.evaluate) as a script, its documented command; --help for the options."""
from ovseg_core.shapes.evaluate import main

raise SystemExit(main())
