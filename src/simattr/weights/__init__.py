"""Backbone weights shipped inside the package (fp16 safetensors, each with a JSON sidecar).

See ``README.md`` in this folder for how each file was trained and what it reaches.
"""
