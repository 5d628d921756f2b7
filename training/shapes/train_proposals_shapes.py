"""ShapesWorld Mask2Former training (ovseg_core.shapes.train_proposals) as a script, its documented command; --help for the options."""
from ovseg_core.shapes.train_proposals import main

raise SystemExit(main())
