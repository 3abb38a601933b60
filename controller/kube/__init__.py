"""The Kubernetes side, one concern per module:

  objects   the API objects' shapes as TypedDicts
  api       KubeClient: the calls made, every API error translated in one place
  connect   credentials, connection options and this controller's identity
  jobs      a trial's batch/v1 Job, its name and labels, and reading a finished Job (pure)
  grant     a trial's presigned URLs for its own keys
  launcher  KubernetesLauncher: trials as Jobs, completion from a watch
  watch     one list-then-watch loop for any kind
  lease     LeaderLease: one controller acts at a time
  operator  the operator: every Search object of the namespace, each its own search loop
  search_status  a Search's status subresource and its Events
  single    one search, no operator: `controller run` on a cluster (Events and a status ConfigMap)

The kube section of the settings is controller/settings/kube.py (pure: loaded without the kubernetes client).
"""
