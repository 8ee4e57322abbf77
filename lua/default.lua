-- luahttpd's embedded default configuration (used when no -c is given).
--
-- Serves the bundled welcome site (examples/www) when started from the source tree,
-- otherwise the current directory, on 127.0.0.1:8080 with 2 workers, in the foreground,
-- logging errors to stderr. LUAHTTPD_ROOT chooses another document root. Files and folders
-- whose name starts with '.' (.git, .env, .ssh) answer 404, except /.well-known/.
server {
  listen = "127.0.0.1:8080",
  workers = 2,
  root = os.getenv("LUAHTTPD_ROOT") or (exists("examples/www") and "examples/www") or ".",
  index = { "index.html", "index.htm" },
  dotfiles = "deny",
  error_log = "stderr",
  access_log = false,
}
