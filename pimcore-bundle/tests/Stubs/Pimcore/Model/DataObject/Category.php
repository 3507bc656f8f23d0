<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject;

/**
 * Stand-in for a class Pimcore generates from tests/Stubs/classes/definition_Category.php (tests only),
 * written as Pimcore's generator writes them (see Product).
 *
 * @method static Category\Listing|Category|null getByCode(mixed $value, ?int $limit = null, int $offset = 0, ?array $objectTypes = null)
 */
class Category extends Concrete
{
    protected $classId = 'cat';
    protected $className = 'Category';
    protected $code;
    protected $title;

    public function getCode(): ?string
    {
        return $this->code;
    }

    public function setCode(?string $code): static
    {
        $this->code = $code;

        return $this;
    }

    public function getTitle(): ?string
    {
        return $this->title;
    }

    public function setTitle(?string $title): static
    {
        $this->title = $title;

        return $this;
    }
}
