"""The Gradio app: `build_demo(editors)` (layout.py) wires widgets to `Handlers` (handlers.py), which call the
editor API; views.py formats what is shown."""

from editor.ui.handlers import AppState, Handlers, Session, resolve_guidance
from editor.ui.layout import build_demo

__all__ = ["AppState", "Handlers", "Session", "build_demo", "resolve_guidance"]
