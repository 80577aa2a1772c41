"""The decision-quality lab: record a node under known stress, measure whether ksense's denies
match a tenant's pain, and learn the controller's rules from recordings (`python -m lab`)."""
