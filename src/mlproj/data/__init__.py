"""Data: scanning folders, splits, datasets and one LightningDataModule per data source."""
