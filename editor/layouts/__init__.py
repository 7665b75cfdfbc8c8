"""The official checkpoint-folder layouts, written by the tiny test trees (editor.tiny), the demo model's export
(editor.demo.model) and the benchmarks, and read by the model specs (editor/pipelines) and the download catalog:
folders.py (folder names, needed files, where a folder is found), sizes.py (`ModelSizes` and its presets),
configs.py (the config files), tokenizers.py (LLaMA SentencePiece and CLIP BPE tokenizers), files.py (stable JSON,
HF-style sharded checkpoints)."""
