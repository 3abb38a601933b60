"""cifar-hpo trainer: the program each trial runs (`python -m trainer --trial <trial URI>`)."""
