"""Models: the ImageClassifier LightningModule and the pieces it is built from."""
