<?php

declare(strict_types=1);

namespace Pimcore\Model\DataObject;

/**
 * Stand-in for a class Pimcore generates from tests/Stubs/classes/definition_Product.php (tests only).
 * Written the way Pimcore's generator writes them (ClassDefinition\Data::getSetterCode(), Data.php:540-600):
 * each setter's parameter type is its field definition's getParameterTypeDeclaration(), and this file
 * declares strict types, as AbstractObject::set() does. StubsTypedSettersTest checks that the two agree.
 *
 * @method static Product\Listing|Product|null getBySku(mixed $value, ?int $limit = null, int $offset = 0, ?array $objectTypes = null)
 */
class Product extends Concrete
{
    protected $classId = 'prod';
    protected $className = 'Product';
    protected $sku;
    protected $ean;
    protected $gtin;
    protected $price;
    protected $weight;
    protected $stock;
    protected $active;
    protected $released;
    protected $color;
    protected $sizes;
    protected $category;
    protected $related;

    public function getSku(): ?string
    {
        return $this->sku;
    }

    public function setSku(?string $sku): static
    {
        $this->sku = $sku;

        return $this;
    }

    public function getEan(): ?string
    {
        return $this->ean;
    }

    public function setEan(?string $ean): static
    {
        $this->ean = $ean;

        return $this;
    }

    public function getGtin(): ?string
    {
        return $this->gtin;
    }

    public function setGtin(?string $gtin): static
    {
        $this->gtin = $gtin;

        return $this;
    }

    public function getName(?string $language = null): ?string
    {
        return $this->getLocalizedfields()->getLocalizedValue('name', $language);
    }

    public function setName(?string $name, ?string $language = null): static
    {
        $this->getLocalizedfields()->setLocalizedValue('name', $name, $language);

        return $this;
    }

    public function getDescription(?string $language = null): ?string
    {
        return $this->getLocalizedfields()->getLocalizedValue('description', $language);
    }

    public function setDescription(?string $description, ?string $language = null): static
    {
        $this->getLocalizedfields()->setLocalizedValue('description', $description, $language);

        return $this;
    }

    public function getPrice(): ?float
    {
        return $this->price;
    }

    public function setPrice(?float $price): static
    {
        /** @var ClassDefinition\Data\Numeric $fd */
        $fd = $this->getClass()->getFieldDefinition('price');
        $this->price = $fd->preSetData($this, $price);

        return $this;
    }

    public function getWeight(): ?string
    {
        return $this->weight === null ? null : (string) $this->weight;
    }

    public function setWeight(?string $weight): static
    {
        /** @var ClassDefinition\Data\Numeric $fd */
        $fd = $this->getClass()->getFieldDefinition('weight');
        $this->weight = $fd->preSetData($this, $weight);

        return $this;
    }

    public function getStock(): ?int
    {
        return $this->stock;
    }

    public function setStock(?int $stock): static
    {
        /** @var ClassDefinition\Data\Numeric $fd */
        $fd = $this->getClass()->getFieldDefinition('stock');
        $this->stock = $fd->preSetData($this, $stock);

        return $this;
    }

    public function getActive(): ?bool
    {
        return $this->active;
    }

    public function setActive(?bool $active): static
    {
        $this->active = $active;

        return $this;
    }

    public function getReleased(): ?\Carbon\Carbon
    {
        return $this->released;
    }

    public function setReleased(?\Carbon\Carbon $released): static
    {
        $this->released = $released;

        return $this;
    }

    public function getColor(): ?string
    {
        return $this->color;
    }

    public function setColor(?string $color): static
    {
        $this->color = $color;

        return $this;
    }

    public function getSizes(): ?array
    {
        return $this->sizes;
    }

    public function setSizes(?array $sizes): static
    {
        $this->sizes = $sizes;

        return $this;
    }

    public function getCategory(): ?\Pimcore\Model\Element\AbstractElement
    {
        return $this->category;
    }

    public function setCategory(?\Pimcore\Model\Element\AbstractElement $category): static
    {
        $this->category = $category;

        return $this;
    }

    public function getRelated(): array
    {
        return $this->related ?? [];
    }

    public function setRelated(?array $related): static
    {
        $this->related = $related;

        return $this;
    }
}
