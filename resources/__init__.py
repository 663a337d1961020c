"""Files shipped with the app: the sample dataset and the icon."""
