"""V-Express ComfyUI nodes. Import ``nodes.extension`` only inside ComfyUI (see ``nodes/_comfy.py``)."""
