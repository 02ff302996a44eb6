import sys

from lcdiff.cli import main

sys.exit(main())
