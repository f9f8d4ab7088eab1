"""The marketers' console (/admin/): users, topics, templates, campaigns, suppressions."""
