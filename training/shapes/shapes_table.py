"""ShapesWorld report tables (ovseg_core.shapes.table) as a script, its documented command; --help for the options."""
from ovseg_core.shapes.table import main

raise SystemExit(main())
