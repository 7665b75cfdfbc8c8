"""The Gradio app: `build_demo(editors)` (layout.py) lays out the widgets, wiring.py connects their events by name to
`Handlers` (handlers.py, session_events.py), which call the editor API; views.py formats what is shown."""

from editor.ui.handlers import Handlers, resolve_guidance
from editor.ui.layout import UI, Widgets, build_demo, build_ui
from editor.ui.state import AppState, Session

__all__ = ["UI", "AppState", "Handlers", "Session", "Widgets", "build_demo", "build_ui", "resolve_guidance"]
