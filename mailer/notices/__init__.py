"""Service notices (privacy-policy revisions and the like): one per contact and policy version."""
