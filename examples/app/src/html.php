<?php
declare(strict_types=1);

/** HTML-escape any text that goes into a page; invalid UTF-8 becomes U+FFFD. */
function e(string $text): string
{
    return htmlspecialchars($text, ENT_QUOTES | ENT_SUBSTITUTE | ENT_HTML5, 'UTF-8');
}

/** Send a complete HTML page; $body must already be escaped. */
function page(string $title, string $body): void
{
    header('Content-Type: text/html; charset=utf-8');
    header('X-Content-Type-Options: nosniff');
    $title = e($title);
    echo <<<HTML
    <!DOCTYPE html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <title>{$title} - fephp example</title>
    <link rel="stylesheet" href="/static/style.css">
    <link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
    <script src="/static/app.js" defer></script>
    </head>
    <body>
    <header><a href="/">fephp example app</a></header>
    <main>
    <h1>{$title}</h1>
    {$body}
    </main>
    <footer id="protocol"></footer>
    </body>
    </html>

    HTML;
}

/** Send $data as JSON; <, >, &, ' and " are \u-escaped so the output is safe even if sniffed as HTML. */
function json(array $data, int $status = 200): void
{
    http_response_code($status);
    header('Content-Type: application/json');
    header('X-Content-Type-Options: nosniff');
    echo json_encode(
        $data,
        JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES | JSON_HEX_TAG | JSON_HEX_AMP | JSON_HEX_APOS | JSON_HEX_QUOT
            | JSON_INVALID_UTF8_SUBSTITUTE | JSON_THROW_ON_ERROR
    ), "\n";
}
