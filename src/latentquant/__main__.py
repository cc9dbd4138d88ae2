import sys

from latentquant.cli import main

sys.exit(main())
