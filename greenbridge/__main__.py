from greenbridge.cli import main

raise SystemExit(main())
