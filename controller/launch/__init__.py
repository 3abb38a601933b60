"""How trials run: the Launcher protocol the loop drives, and local mode's launcher with its per-trial supervisor
(the Kubernetes launcher is in controller.kube).
"""
