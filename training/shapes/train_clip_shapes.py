"""ShapesWorld CLIP training (ovseg_core.shapes.train_clip) as a script, its documented command; --help for the options."""
from ovseg_core.shapes.train_clip import main

raise SystemExit(main())
