from mfcore.cli import main

raise SystemExit(main())
