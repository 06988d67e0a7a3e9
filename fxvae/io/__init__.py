"""Files and data: VAE files and AE checkpoints, ONNX export, data files, batches."""
