"""The Kubernetes side, one concern per module:

  settings  KubeSettings (pure: the config loader reads it without the kubernetes client)
  objects   the API objects' shapes as TypedDicts
  api       KubeClient: the calls made, every API error translated in one place
  jobs      a trial's batch/v1 Job, its name and labels, and reading a finished Job (pure)
  launcher  KubernetesLauncher: trials as Jobs, completion from a watch
  events    KubeNotifier: Events and the status ConfigMap
  lease     LeaderLease: one controller acts at a time
"""
