"""Development helpers: `mailer dev` (web + worker + capture SMTP) and its captured-mail page."""
