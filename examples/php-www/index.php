<?php
// A page served by php-cgi through luahttpd's FastCGI support.
header('Content-Type: text/html; charset=utf-8');
?>
<!DOCTYPE html>
<html><head><title>luahttpd + PHP</title></head>
<body>
<h1>Hello from PHP <?= htmlspecialchars(PHP_VERSION) ?></h1>
<p>Script: <?= htmlspecialchars($_SERVER['SCRIPT_NAME']) ?>,
path info: <?= htmlspecialchars($_SERVER['PATH_INFO'] ?? '(none)') ?>,
query: <?= htmlspecialchars($_SERVER['QUERY_STRING']) ?></p>
</body></html>
