<?php
// The controller: a small JSON page, a small HTML page rendered by Twig, and the PHP process's pid and SAPI.

declare(strict_types=1);

namespace App\Controller;

use App\Service\Catalog;
use App\Service\Greeting;
use Symfony\Bundle\FrameworkBundle\Controller\AbstractController;
use Symfony\Component\HttpFoundation\JsonResponse;
use Symfony\Component\HttpFoundation\Response;

final class PageController extends AbstractController
{
    public function __construct(private Catalog $catalog, private Greeting $greeting)
    {
    }

    public function catalogJson(): JsonResponse
    {
        return new JsonResponse(['greeting' => $this->greeting->text(), 'items' => $this->catalog->featured(3)]);
    }

    public function catalogHtml(): Response
    {
        return $this->render('catalog.html.twig', [
            'greeting' => $this->greeting->text(),
            'items' => $this->catalog->featured(5),
        ]);
    }

    public function pid(): JsonResponse
    {
        return new JsonResponse(['pid' => getmypid(), 'sapi' => PHP_SAPI]);
    }
}
