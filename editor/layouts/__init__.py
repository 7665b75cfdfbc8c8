"""The official checkpoint-folder layouts, written by the tiny test trees (editor.tiny), the demo model's export
(editor.demo.model) and the benchmarks: files.py writes their JSON files and HF-style sharded checkpoints."""
