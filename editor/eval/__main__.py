"""`python -m editor.eval`: see editor/eval/cli.py."""

import sys

from editor.eval.cli import main

sys.exit(main())
