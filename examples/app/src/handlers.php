<?php
declare(strict_types=1);

/*
 * The example's pages.  Each handler reads the request from PHP's superglobals
 * (filled by php-fpm from the CGI environment the front server sends) and
 * writes its response; nothing here knows which front server is in use.
 */

function home(): void
{
    $links = [
        '/hello/world' => 'a greeting from a path segment',
        '/form' => 'a POST form with Post/Redirect/Get',
        '/cookie' => 'two cookies and a visit counter',
        '/upload' => 'a multipart file upload, answered as JSON',
        '/json' => 'the CGI variables PHP received',
        '/stream' => 'output flushed line by line',
        '/info.php/extra/path' => 'a separate script with PATH_INFO',
        '/static/hello.txt' => 'a static file served by the front server',
        '/no/such/page' => 'the 404 page',
    ];
    $items = '';
    foreach ($links as $href => $what) {
        $items .= '<li><a href="' . e($href) . '">' . e($href) . '</a> - ' . e($what) . "</li>\n";
    }
    page('Home', "<p>Every route shows one thing a front server must get right.</p>\n<ul>\n{$items}</ul>");
}

function hello(array $params): void
{
    page('Hello', '<p class="greeting">Hello, ' . e($params['name']) . '!</p>');
}

function form_show(): void
{
    $notice = ($_GET['done'] ?? '') === '1' ? '<p class="notice">Thank you, your message was received.</p>' : '';
    page('Form', $notice . form_html(''));
}

function form_html(string $error): string
{
    $error = $error === '' ? '' : '<p class="error">' . e($error) . '</p>';
    return <<<HTML
    {$error}
    <form method="post" action="/form">
    <label for="message">Message</label>
    <input id="message" name="message" type="text" maxlength="200" required>
    <button type="submit">Send</button>
    </form>
    HTML;
}

function form_post(): void
{
    // $_POST is filled only for urlencoded and multipart bodies, and only when
    // the front server passes CONTENT_TYPE and CONTENT_LENGTH through.
    $type = strtolower(trim(explode(';', $_SERVER['CONTENT_TYPE'] ?? '', 2)[0]));
    if ($type !== 'application/x-www-form-urlencoded') {
        http_response_code(415);
        header('Accept-Post: application/x-www-form-urlencoded');
        page('Form', '<p class="error">Send the form as application/x-www-form-urlencoded.</p>');
        return;
    }
    $message = $_POST['message'] ?? null;
    if (!is_string($message) || trim($message) === '') {
        http_response_code(422);
        page('Form', form_html('The message must not be empty.'));
        return;
    }
    // Post/Redirect/Get: 303 makes the browser follow with a GET, so reloading
    // the result page does not submit the form again.  The body shows the
    // value to clients that do not follow redirects.
    http_response_code(303);
    header('Location: /form?done=1');
    page('Form', '<p>Received: <q class="received">' . e($message) . '</q>. Continue to <a href="/form?done=1">/form?done=1</a>.</p>');
}

function cookie(): void
{
    $seen = $_COOKIE['visits'] ?? '';
    $visits = (is_string($seen) && preg_match('/^\d{1,9}$/', $seen) ? (int) $seen : 0) + 1;
    $options = ['path' => '/', 'httponly' => true, 'samesite' => 'Lax', 'expires' => time() + 86400 * 30];
    // Two Set-Cookie headers: a front server must pass both, never fold them
    // into one line (RFC 6265, section 3).
    setcookie('visits', (string) $visits, $options);
    setcookie('theme', 'light', $options);
    page('Cookie', '<p>Visits: <span class="visits">' . e((string) $visits) . '</span></p>');
}

function upload_show(): void
{
    page('Upload', <<<HTML
    <form method="post" action="/upload" enctype="multipart/form-data">
    <label for="file">File</label>
    <input id="file" name="file" type="file" required>
    <button type="submit">Upload</button>
    </form>
    HTML);
}

function upload_post(): void
{
    // PHP drops a body larger than post_max_size (with a warning), leaving
    // $_POST and $_FILES empty although CONTENT_LENGTH says data came.
    if ($_POST === [] && $_FILES === [] && (int) ($_SERVER['CONTENT_LENGTH'] ?? 0) > 0) {
        json(['error' => 'the body is larger than post_max_size (' . ini_get('post_max_size') . ')'], 413);
        return;
    }
    $file = $_FILES['file'] ?? null;
    if (!is_array($file) || !is_int($file['error'])) {
        json(['error' => 'send one file in the multipart field "file"'], 400);
        return;
    }
    switch ($file['error']) {
        case UPLOAD_ERR_OK:
            break;
        case UPLOAD_ERR_INI_SIZE:
        case UPLOAD_ERR_FORM_SIZE:
            json(['error' => 'the file is larger than upload_max_filesize (' . ini_get('upload_max_filesize') . ')'], 413);
            return;
        case UPLOAD_ERR_NO_FILE:
            json(['error' => 'no file was sent'], 400);
            return;
        default:
            json(['error' => 'the upload failed (PHP upload error ' . $file['error'] . ')'], 500);
            return;
    }
    if (!is_uploaded_file($file['tmp_name'])) {
        json(['error' => 'not an uploaded file'], 400);
        return;
    }
    json([
        'name' => $file['name'],
        'size' => filesize($file['tmp_name']),
        'sha256' => hash_file('sha256', $file['tmp_name']),
    ]);
}

function environment(): void
{
    // SCRIPT_FILENAME is shown relative to DOCUMENT_ROOT so the page does not
    // disclose where the app is installed.
    $root = rtrim($_SERVER['DOCUMENT_ROOT'] ?? '', '/');
    $script = $_SERVER['SCRIPT_FILENAME'] ?? null;
    if (is_string($script) && $root !== '' && str_starts_with($script, $root . '/')) {
        $script = substr($script, strlen($root));
    } elseif ($script !== null) {
        $script = '(outside DOCUMENT_ROOT)';
    }
    $keys = [
        'REQUEST_METHOD', 'REQUEST_URI', 'SCRIPT_NAME', 'PATH_INFO', 'QUERY_STRING',
        'SERVER_SOFTWARE', 'SERVER_NAME', 'SERVER_PORT', 'SERVER_PROTOCOL', 'GATEWAY_INTERFACE',
        'CONTENT_TYPE', 'CONTENT_LENGTH', 'HTTP_HOST',
    ];
    $env = [];
    foreach ($keys as $key) {
        $env[$key] = $_SERVER[$key] ?? null;
    }
    $env['SCRIPT_FILENAME'] = $script;
    // CGI 1.1 leaves HTTPS to the server; PHP treats "on" or any non-empty
    // value other than "off" as a TLS request.
    $env['HTTPS'] = !empty($_SERVER['HTTPS']) && strtolower((string) $_SERVER['HTTPS']) !== 'off';
    // httpoxy: a "Proxy:" request header must not reach PHP as HTTP_PROXY.
    $env['HTTP_PROXY_present'] = isset($_SERVER['HTTP_PROXY']);
    json($env);
}

function stream(): void
{
    header('Content-Type: text/plain; charset=utf-8');
    // Tell nginx not to buffer, for comparison runs behind nginx + php-fpm.
    header('X-Accel-Buffering: no');
    while (ob_get_level() > 0) {
        ob_end_flush();
    }
    for ($i = 1; $i <= 5; $i++) {
        echo "line {$i} of 5 at ", number_format(microtime(true), 3, '.', ''), "\n";
        flush();
        if ($i < 5) {
            usleep(200_000);
        }
    }
}

function not_found(string $path): void
{
    http_response_code(404);
    page('Not found', '<p>There is no page at <code>' . e($path) . '</code>.</p><p><a href="/">Back home</a></p>');
}
