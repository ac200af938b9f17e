<?php
// A service holding the app's data: a few products, as a repository would return them.

declare(strict_types=1);

namespace App\Service;

final class Catalog
{
    public function __construct(private PriceFormatter $prices)
    {
    }

    /** @return list<array{sku: string, name: string, price: string}> */
    public function featured(int $limit): array
    {
        $items = [
            ['SKU-1001', 'Espresso cup', 1250],
            ['SKU-1002', 'Milk jug', 1990],
            ['SKU-1003', 'Tamper', 2475],
            ['SKU-1004', 'Grinder', 12900],
            ['SKU-1005', 'Scale', 3450],
        ];
        $out = [];
        foreach (array_slice($items, 0, $limit) as [$sku, $name, $cents]) {
            $out[] = ['sku' => $sku, 'name' => $name, 'price' => $this->prices->format($cents)];
        }
        return $out;
    }
}
