"""Where commands run. `base.Runtime` is the interface the executor talks to; `local` runs them on
this machine. A Kubernetes runtime (pods via exec) takes the local one's place behind it."""
