"""Training and inference machinery shared by every stage. It knows nothing about URN itself:
URN plugs in through the dataset (which yields per-pixel weights) and the loss."""
