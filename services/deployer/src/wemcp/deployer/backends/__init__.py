"""Deployment backends behind one interface (:class:`wemcp.deployer.backends.base.Deployer`)."""
