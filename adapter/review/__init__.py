"""The coder's worklist in `facet-adapter serve` (`/review`, docs/server.md):

- `store`: what the service coded and what coders did, in the service's database;
- `users`: the users file (`facet-adapter users add|remove|list`), argon2 password hashes;
- `access`: signing in (password or a trusted single sign-on header), sessions, CSRF, rate limits;
- `pages`: the HTML pages (Jinja2, autoescaped; the claim itself as `check --format html` shows it);
- `routes`: the endpoints, mounted by `adapter.service.app` when the service has users;
- `cli`: the `users` command and the `serve --review-…` options.
"""
