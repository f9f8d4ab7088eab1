# The mailer service in one image: gunicorn (web), the worker and the migration run from it
# with the README's commands (compose.yaml). Dependencies come from requirements.lock, each
# checked against its hashes. Not built on the project's machines (they reach no registry of
# base images); tests/test_deployment.py checks it against the README instead.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --user-group --uid 10001 --home-dir /srv/mailer --create-home mailer
WORKDIR /srv/mailer

COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

# The source itself: `flask --app wsgi` and `gunicorn wsgi:app` import it from here.
COPY config.py wsgi.py ./
COPY mailer/ mailer/
COPY migrations/ migrations/
COPY templates/ templates/
# instance/ is where development keeps generated keys and its SQLite file; production gives
# every key in the environment, but the folder must exist and be the service's own.
RUN mkdir instance && chown mailer:mailer instance

USER mailer
EXPOSE 8000
CMD ["gunicorn", "-w", "4", "-b", "0.0.0.0:8000", "wsgi:app"]
