<?php
// A service with configuration: prices in cents to text.

declare(strict_types=1);

namespace App\Service;

final class PriceFormatter
{
    public function format(int $cents): string
    {
        return sprintf('%d.%02d EUR', intdiv($cents, 100), $cents % 100);
    }
}
