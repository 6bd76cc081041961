"""Training and inference machinery shared by every stage: one training loop (:mod:`urn.engine.loop`)
serves the CAM classifier, Seg-1 and Seg-2. It knows nothing about URN itself: URN plugs in through the
dataset (which yields per-pixel weights) and the loss."""
