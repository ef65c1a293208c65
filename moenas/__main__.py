import sys

from moenas.cli import main

sys.exit(main())
