<?php
// A service reading the request: a greeting for the name in the query, through the RequestStack.

declare(strict_types=1);

namespace App\Service;

use Symfony\Component\HttpFoundation\RequestStack;

final class Greeting
{
    public function __construct(private RequestStack $requests)
    {
    }

    public function text(): string
    {
        $name = (string)($this->requests->getCurrentRequest()?->query->get('name') ?? 'guest');
        return 'Hello, ' . ($name === '' ? 'guest' : $name);
    }
}
