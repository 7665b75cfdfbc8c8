"""The Gradio app: `build_demo(editors)` (layout.py) wires widgets to `Handlers` (handlers.py), which call the
editor API; views.py formats what is shown."""

from editor.ui.handlers import Handlers, resolve_guidance
from editor.ui.layout import build_demo
from editor.ui.state import AppState, Session

__all__ = ["AppState", "Handlers", "Session", "build_demo", "resolve_guidance"]
