<?php
// A small Symfony HttpKernel app, booted once by fephp's Symfony Runtime (see README.md): returns the closure that
// builds the kernel, as a Symfony front controller does.
//
// Routes:
//   GET  /hello    JSON: the query, the cookies, the client IP, the request id (a request attribute), the host,
//                  and how many requests this kernel has handled
//   POST /form     JSON: the form and, for each uploaded file, its original name, type, size and md5
//   GET  /visit    two cookies (two Set-Cookie headers)
//   GET  /stream   a StreamedResponse echoing "one\n", "two\n", "three\n"
//   GET  /fail     the controller throws
// Anything else is a 404 (the kernel's own NotFoundHttpException, turned into a response by the listener below).

declare(strict_types=1);

use Symfony\Component\EventDispatcher\EventDispatcher;
use Symfony\Component\HttpFoundation\Cookie;
use Symfony\Component\HttpFoundation\File\UploadedFile;
use Symfony\Component\HttpFoundation\JsonResponse;
use Symfony\Component\HttpFoundation\Request;
use Symfony\Component\HttpFoundation\RequestStack;
use Symfony\Component\HttpFoundation\Response;
use Symfony\Component\HttpFoundation\StreamedResponse;
use Symfony\Component\HttpKernel\Controller\ArgumentResolver;
use Symfony\Component\HttpKernel\Controller\ControllerResolver;
use Symfony\Component\HttpKernel\Event\ExceptionEvent;
use Symfony\Component\HttpKernel\Event\RequestEvent;
use Symfony\Component\HttpKernel\Exception\NotFoundHttpException;
use Symfony\Component\HttpKernel\HttpKernel;
use Symfony\Component\HttpKernel\KernelEvents;

return static function (array $context): HttpKernel {
    $handled = 0; // kept across requests: the kernel is built once
    $describe = static function (array $files) use (&$describe): array {
        return array_map(static fn ($file) => $file instanceof UploadedFile ? [
            'name' => $file->getClientOriginalName(),
            'type' => $file->getClientMimeType(),
            'size' => $file->getSize(),
            'md5' => md5_file($file->getPathname()),
        ] : $describe($file), $files);
    };
    $routes = [
        '/hello' => static function (Request $request) use (&$handled): Response {
            return new JsonResponse([
                'query' => $request->query->all(),
                'cookies' => $request->cookies->all(),
                'clientIp' => $request->getClientIp(),
                'requestId' => $request->attributes->get('requestId'),
                'host' => $request->getHttpHost(),
                'handled' => $handled,
            ]);
        },
        '/form' => static fn (Request $request): Response => new JsonResponse([
            'form' => $request->request->all(),
            'files' => $describe($request->files->all()),
        ]),
        '/visit' => static function (Request $request): Response {
            $visits = (int)$request->cookies->get('visits', '0') + 1;
            $response = new Response("visit $visits", 200, ['Content-Type' => 'text/plain']);
            $response->headers->setCookie(Cookie::create('visits', (string)$visits)->withSameSite(null));
            $response->headers->setCookie(Cookie::create('theme', 'dark', 0, '/', null, false, false, false, 'lax'));
            return $response;
        },
        '/stream' => static fn (): Response => new StreamedResponse(static function (): void {
            foreach (["one\n", "two\n", "three\n"] as $piece) {
                echo $piece;
                flush();
            }
        }, 200, ['Content-Type' => 'text/plain']),
        '/fail' => static function (): Response {
            throw new RuntimeException('deliberate failure');
        },
    ];

    $dispatcher = new EventDispatcher();
    // The routing: a path names its controller (a full app has symfony/routing's RouterListener here).
    $dispatcher->addListener(KernelEvents::REQUEST, static function (RequestEvent $event) use ($routes, &$handled) {
        $handled++;
        $path = $event->getRequest()->getPathInfo();
        if (!isset($routes[$path])) {
            throw new NotFoundHttpException("no route for $path");
        }
        $event->getRequest()->attributes->set('_controller', $routes[$path]);
    });
    // HTTP exceptions become their status; anything else is left to the runtime (an ERROR frame).
    $dispatcher->addListener(KernelEvents::EXCEPTION, static function (ExceptionEvent $event): void {
        $e = $event->getThrowable();
        if ($e instanceof NotFoundHttpException) {
            $event->setResponse(new JsonResponse(['error' => $e->getMessage()], 404));
        }
    });
    return new HttpKernel($dispatcher, new ControllerResolver(), new RequestStack(), new ArgumentResolver());
};
