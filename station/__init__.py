"""Open-source industrial inspection station."""

import os

# The station shares a few cores between the backbone (ONNX Runtime), the nearest-neighbour
# search (faiss, OpenMP) and the screen. OpenMP's default is to keep its threads spinning after
# each parallel region, on cores the next stage needs: set before faiss or torch start OpenMP
# (they read it once); a value set by the user stands.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
