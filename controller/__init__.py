"""cifar-hpo controller: Hyperopt TPE search whose state lives in a store as plain JSON."""
