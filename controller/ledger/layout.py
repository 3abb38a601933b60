"""Where each record of a search lives in its store, and who writes it.

Layout under a search's root (one writer per key):
  search.json                      controller, once: config + space snapshot
  owner.json                       operator, once (again when its owner is gone): the Search whose folder it is
                                   (namespace, name, UID)
  trials/<tid>/proposal.json       controller, once, before the trial starts
  trials/<tid>/progress.json       trainer, each epoch
  trials/<tid>/result.json         trainer, once
  trials/<tid>/outcome.json        controller, once, when a trial ends without a usable result (a stopped trial's:
                                   sealed when its end is seen, saying whether its result had arrived)
  trials/<tid>/stop.json           controller, once, before it stops a running trial (early stop, search end):
                                   a trainer stopped without it (node drain, eviction) exits for a retry
  trials/<tid>/trial.log           launcher, once, when the trial's process ends
  best.json, status.json           controller, derived
  ledger/checkpoint.json           controller, derived: the records of trials already decided
"""

CHECKPOINT_KEY = "ledger/checkpoint.json"
OWNER_KEY = "owner.json"


def trial_prefix(tid: int) -> str:
    """The folder of one trial's records."""
    # Zero-padded so that key order is trial order (S3 lists lexicographically).
    return f"trials/{tid:06d}"


def trial_key(tid: int, name: str) -> str:
    """The key of one record of a trial (proposal.json, result.json ...)."""
    return f"{trial_prefix(tid)}/{name}"
