<?php
declare(strict_types=1);

/**
 * A tiny router: method + path pattern -> handler.
 *
 * Patterns are literal paths with `{name}` placeholders matching one path
 * segment.  Matching runs on the raw (still percent-encoded) path, so an
 * encoded slash (%2F) never splits a segment; captured values are decoded
 * before they reach the handler.
 */
final class Router
{
    /** @var array<string, array<string, callable>> pattern regex -> method -> handler */
    private array $routes = [];

    public function add(string $method, string $pattern, callable $handler): void
    {
        $regex = '#^' . preg_replace('#\\\\\{([a-z]+)\\\\\}#', '(?P<$1>[^/]+)', preg_quote($pattern, '#')) . '$#';
        $this->routes[$regex][strtoupper($method)] = $handler;
    }

    /**
     * Run the handler for $method and $path.
     *
     * Returns false when no pattern matches, so the caller can answer 404.
     * A matching path with the wrong method answers 405 with an Allow header
     * (RFC 9110, 15.5.6); HEAD is served by the GET handler.
     */
    public function dispatch(string $method, string $path): bool
    {
        foreach ($this->routes as $regex => $handlers) {
            if (!preg_match($regex, $path, $m)) {
                continue;
            }
            $params = [];
            foreach ($m as $key => $value) {
                if (is_string($key)) {
                    $params[$key] = rawurldecode($value);
                }
            }
            $handler = $handlers[$method] ?? ($method === 'HEAD' ? ($handlers['GET'] ?? null) : null);
            if ($handler === null) {
                http_response_code(405);
                $allow = array_keys($handlers);
                if (isset($handlers['GET']) && !isset($handlers['HEAD'])) {
                    $allow[] = 'HEAD';
                }
                header('Allow: ' . implode(', ', $allow));
                page('Method not allowed', '<p>This page does not accept ' . e($method) . '.</p>');
                return true;
            }
            $handler($params);
            return true;
        }
        return false;
    }
}
