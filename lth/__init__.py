"""lth: lottery-ticket experiments on PyTorch Lightning and Hydra (importing it loads no training dependencies)."""
